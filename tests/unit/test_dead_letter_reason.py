"""A dead letter's reason names the error's class and the first line of its message, bounded:
the class alone (``ProgrammingError``) could not tell a revoked permission from a missing
table (a fault campaign). SQLAlchemy puts the SQL on the lines after the first."""

from sqlalchemy.exc import ProgrammingError

from messaging.delivery import REASON_DETAIL, error_summary


def test_the_first_line_of_a_database_error() -> None:
    error = ProgrammingError(
        "UPDATE users SET credits=$1", {"p": 1}, Exception("permission denied for table users")
    )
    summary = error_summary(error)
    assert summary.startswith("ProgrammingError: ")
    assert summary.endswith("permission denied for table users")
    assert "UPDATE" not in summary and "\n" not in summary


def test_a_long_message_is_cut_and_an_empty_one_leaves_the_class() -> None:
    assert len(error_summary(RuntimeError("x" * 1000))) == len("RuntimeError: ") + REASON_DETAIL
    assert error_summary(RuntimeError()) == "RuntimeError"
    assert error_summary(RuntimeError("  \n  ")) == "RuntimeError"
