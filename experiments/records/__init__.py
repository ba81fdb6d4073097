"""What runs leave behind: ``store`` (one JSON record per configuration and its predictions, written
atomically, read back; a failed run never replaces a successful one) and ``locks`` (a live run's claim on
its configuration, so that two launchers over one folder train it once)."""
