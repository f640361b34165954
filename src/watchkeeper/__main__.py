"""`python -m watchkeeper` is the same as the `watchkeeper` command."""

from watchkeeper.cli.main import main

if __name__ == "__main__":
    main()
