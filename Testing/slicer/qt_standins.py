"""Qt stand-ins for driving the module's Widget class headlessly (slicer-core has no Qt).

What is REAL in the Widget test: the Widget's own code, the `.ui` file (every widget it declares, by name and
class), the module Logic, the background worker and the MRML scene. What is a STAND-IN, kept minimal:
- ``FakeWidget``: one object per `<widget>` of the `.ui` file with the properties the Widget touches (text,
  enabled, visible, value, checked, collapsed, toolTip), combo-box items, a plain-text log and table cells;
  ``connect(signal, slot)`` records the slot so the test can emit the signal by name (``emit``); like PythonQt,
  a slot that takes fewer arguments than the signal carries is called with the leading ones.
- ``load_ui``: parses the `.ui` file into FakeWidgets (stands in for ``slicer.util.loadUI``), and
  ``child_widget_variables`` returns them by name (``slicer.util.childWidgetVariables``).
- ``qt.QTimer``: records its slot; the test calls ``fire()`` instead of waiting for an event loop.
- ``qt.QTableWidgetItem``: holds a text. ``qt.QFileDialog``: its static getters return the path the test put in
  ``FakeFileDialog.answer`` (a file name or a folder) and record what was asked. ``qt.QSettings``: an in-memory
  dict.
- Dialogs (``slicer.util.errorDisplay``, ``confirmOkCancelDisplay``) record their messages and answer as told.
- Selecting a module and the Segment Editor widget: a recorder of what was asked.
Not exercised: Qt's own rendering, layouts and the parameter node's GUI binding (``connectGui`` is a no-op in
harness.py), so widget values the parameter node would set are set on the parameter node directly.
"""
from __future__ import annotations

import types
import xml.etree.ElementTree as ET


class FakeWidget:
    def __init__(self, cls: str, name: str):
        self.cls, self.name = cls, name
        self.text, self.toolTip = "", ""
        self.enabled = self.visible = True
        self.checked = self.collapsed = False
        self.value = 0
        self.currentPath = ""
        self.items: list[tuple[str, object]] = []
        self.currentIndex = -1
        self.lines: list[str] = []
        self.cells: dict[tuple[int, int], str] = {}
        self.slots: dict[str, list] = {}

    # signals
    def connect(self, signal: str, slot) -> None:
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args) -> None:
        if signal not in self.slots:
            raise AssertionError(f"nothing is connected to {self.name}.{signal}")
        for slot in self.slots[signal]:
            slot(*args[:_arity(slot, len(args))])

    # combo box
    def clear(self) -> None:
        self.items, self.currentIndex, self.lines = [], -1, []

    def addItem(self, text: str, data=None) -> None:
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def insertItem(self, index: int, text: str, data=None) -> None:
        self.items.insert(index, (text, data))

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex][0] if self.currentIndex >= 0 else ""

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if self.currentIndex >= 0 else None

    # plain-text log
    def appendPlainText(self, line: str) -> None:
        self.lines.append(line)

    # table
    def setRowCount(self, n: int) -> None:
        self.rows = n

    def setColumnCount(self, n: int) -> None:
        self.columns = n

    def setHorizontalHeaderLabels(self, labels) -> None:
        self.headers = list(labels)

    def setItem(self, row: int, column: int, item) -> None:
        self.cells[(row, column)] = item.text

    # scene
    def setMRMLScene(self, scene) -> None:
        self.scene = scene


def _arity(slot, available: int) -> int:
    """Like PythonQt: a slot that takes fewer arguments than the signal carries gets the leading ones."""
    import inspect

    params = inspect.signature(slot).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


def load_ui(path) -> FakeWidget:
    root = FakeWidget("QWidget", "root")
    root.children = {w.get("name"): FakeWidget(w.get("class"), w.get("name")) for w in ET.parse(path).iter("widget")}
    return root


def child_widget_variables(root: FakeWidget):
    return types.SimpleNamespace(**root.children)


class FakeTimer:
    def __init__(self):
        self.active, self.slot = False, None

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def connect(self, signal: str, slot) -> None:
        assert signal == "timeout()"
        self.slot = slot

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        assert self.active, "the timer is not running"
        self.slot()


class FakeFileDialog:
    answer = ""
    asked: list = []

    @classmethod
    def getSaveFileName(cls, parent, caption, name="", filters=""):
        cls.asked.append(caption)
        return cls.answer

    @classmethod
    def getExistingDirectory(cls, parent, caption):
        cls.asked.append(caption)
        return cls.answer


class FakeSettings:
    """``qt.QSettings``: one in-memory store for the test process."""

    store: dict = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value) -> None:
        self.store[key] = value


def fake_qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    qt.QSettings = FakeSettings
    qt.QFileDialog = FakeFileDialog
    qt.QTableWidgetItem = lambda text: types.SimpleNamespace(text=text)
    return qt
