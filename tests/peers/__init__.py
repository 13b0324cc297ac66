"""Real DICOM peers for tests of every area: Orthanc as the PACS, dcmtk tools, synthetic exams."""
