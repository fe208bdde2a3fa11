from producers.telegram_bot.app import main

main()
