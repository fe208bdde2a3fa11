from producers.scheduler.app import main

main()
