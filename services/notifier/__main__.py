"""`python -m services.notifier`."""

from services.notifier.main import main

main()
