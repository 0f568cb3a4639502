from vedforge.entry import entry

entry()
