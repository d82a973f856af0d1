import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.paths import confine


def test_inside_the_root_is_allowed(tmp_path):
    (tmp_path / "raw").mkdir()
    assert confine(tmp_path / "raw" / "a.nxs", [tmp_path / "raw"]) == (tmp_path / "raw" / "a.nxs").resolve()
    assert confine("/etc/passwd", []) == __import__("pathlib").Path("/etc/passwd")


def test_dotdot_and_symlink_escapes_are_refused(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "escape").symlink_to("/etc")
    with pytest.raises(ConfigError, match=r"outside the allowed root"):
        confine(raw / ".." / "secret.nxs", [raw], "announced file")
    with pytest.raises(ConfigError, match=r"announced file .*escape/passwd resolves to /etc/passwd"):
        confine(raw / "escape" / "passwd", [raw], "announced file")
    with pytest.raises(ConfigError):
        confine(str(tmp_path / "raw2" / "x.nxs"), [raw])  # a sibling sharing the prefix is not inside
