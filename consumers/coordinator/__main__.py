from consumers.coordinator.app import main

main()
