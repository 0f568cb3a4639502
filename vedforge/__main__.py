from vedforge.cli import main

main()
