import pytest

from modularevo.errors import UnknownNameError
from modularevo.registry import Registry


def test_register_get_and_names():
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)

    @reg.register("beta")
    def beta() -> int:
        return 2

    assert reg.get("alpha") == 1
    assert reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"]
    assert "alpha" in reg
    assert len(reg) == 2


def test_unknown_name_suggests_close_match_and_lists_all():
    reg: Registry[int] = Registry("merge method")
    for n in ["ties", "task_arithmetic", "dare_ties"]:
        reg.add(n, 0)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("tiess")
    msg = str(exc.value)
    assert "Did you mean 'ties'" in msg
    assert "dare_ties, task_arithmetic, ties" in msg


@pytest.mark.parametrize("bad", ["", "Upper", "has space"])
def test_bad_names_rejected(bad):
    with pytest.raises(ValueError, match="lower case"):
        Registry("x").add(bad, 0)


def test_duplicate_and_frozen():
    reg: Registry[int] = Registry("x")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    reg.freeze()
    with pytest.raises(ValueError, match="frozen"):
        reg.add("b", 2)


def test_remove_unregisters_and_reports_unknown_names():
    reg: Registry[int] = Registry("x")
    reg.add("a", 1)
    assert reg.remove("a") == 1
    assert "a" not in reg
    reg.add("a", 3)  # the name is free again
    with pytest.raises(UnknownNameError, match="unknown x 'b'"):
        reg.remove("b")
    reg.freeze()
    with pytest.raises(ValueError, match="frozen"):
        reg.remove("a")
