"""Writers: masks (NIfTI / PNG), results.json, report.html, DICOM SEG / SR / SC."""
