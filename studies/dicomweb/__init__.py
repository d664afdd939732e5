"""DICOMweb for viewers and other archives: QIDO-RS, WADO-RS, WADO-URI and STOW-RS."""
