from distqueue.cli import main

main()
