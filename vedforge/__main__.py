from vedforge.cli import entry

entry()
