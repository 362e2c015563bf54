from minikvm.devices.irq import IrqLine


def test_controller_hears_only_changes() -> None:
    heard: list[bool] = []
    line = IrqLine(heard.append)
    line.lower()
    line.raise_()
    line.raise_()
    line.set(True)
    line.lower()
    line.set(False)
    line.set(True)
    assert heard == [True, False, True]
    assert line.level


def test_without_a_controller_the_level_is_still_tracked() -> None:
    line = IrqLine()
    assert not line.level
    line.raise_()
    assert line.level
    line.lower()
    assert not line.level
