from consumers.notifier.app import main

main()
