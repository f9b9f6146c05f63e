"""`python -m services.operator_registry`"""

from services.operator_registry.main import main

if __name__ == "__main__":
    main()
