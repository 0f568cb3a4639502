from vedforge.cli.entry import entry

entry()
