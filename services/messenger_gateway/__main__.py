from services.messenger_gateway.main import main

if __name__ == "__main__":
    main()
