from consumers.deployer.app import main

main()
