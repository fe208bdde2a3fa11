from consumers.repo.app import main

main()
