"""``python -m api``: serve the API with uvicorn (uvloop + httptools)."""

import uvicorn

from api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        # Logging is configured in the lifespan (structured, with trace ids), not by uvicorn.
        log_config=None,
        loop="auto",
        http="auto",
        # Let in-flight requests finish on SIGTERM, within a bound.
        timeout_graceful_shutdown=10,
        # Longer than any client's or load balancer's idle timeout (httpx: 5 s, the same as
        # uvicorn's default): otherwise the server may close an idle connection just as the
        # client sends a request on it, and a POST fails with "connection reset".
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
