"""Render the module panel (LiverSegmentation.ui) to a PNG for the README, without Slicer.

Usage (needs PySide6-Essentials, not a project dependency):
    python Resources/scripts/render_panel.py LiverSegmentation/Resources/UI/LiverSegmentation.ui out.png \
        "MODEL SUMMARY" "STATUS TEXT" "Measure=Value;Measure=Value"
Slicer-only widgets are drawn with stock Qt stand-ins (qMRMLNodeComboBox -> QComboBox, ctkCollapsibleButton -> QGroupBox).
"""
import os, re, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication, QTableWidgetItem
from PySide6.QtUiTools import QUiLoader
from PySide6.QtCore import QBuffer, QByteArray, QIODevice
ui = open(sys.argv[1]).read()
ui = ui.replace('class="qMRMLNodeComboBox"', 'class="QComboBox"').replace('class="ctkCollapsibleButton"', 'class="QGroupBox"')
ui = ui.replace('class="qMRMLWidget"', 'class="QWidget"')
ui = re.sub(r"<customwidgets>.*</customwidgets>", "", ui, flags=re.S)
ui = re.sub(r"<connections>.*</connections>", "", ui, flags=re.S)
ui = re.sub(r'<property name="text">(\s*<string>(Inputs|Options|Output|Results|Log)</string>)', r'<property name="title">\1', ui)
app = QApplication([])
buf = QBuffer(); buf.setData(QByteArray(ui.encode())); buf.open(QIODevice.ReadOnly)
w = QUiLoader().load(buf)
f = lambda n: w.findChild(object, n)
f("inputVolumeSelector").addItem("LiTS117 CT")
for m in ["liver-unet (default)", "liver-resunet", "Load model file..."]: f("modelComboBox").addItem(m)
f("modelInfoLabel").setText(sys.argv[3])
for d in ["auto", "GPU (cuda)", "cpu"]: f("deviceComboBox").addItem(d)
f("outputSegmentationSelector").addItem("Create new segmentation")
f("statusLabel").setText(sys.argv[4])
t = f("statisticsTableWidget"); rows = [r.split("=") for r in sys.argv[5].split(";")]
t.setColumnCount(2); t.setRowCount(len(rows)); t.setHorizontalHeaderLabels(["Measure", "Value"])
for i, (k, v) in enumerate(rows): t.setItem(i, 0, QTableWidgetItem(k)); t.setItem(i, 1, QTableWidgetItem(v))
t.setColumnWidth(0, 200)
f("editInSegmentEditorButton").setEnabled(True)
f("logTextEdit").setVisible(False)  # the Log section starts collapsed in Slicer
w.resize(440, 760)
w.grab().save(sys.argv[2])
