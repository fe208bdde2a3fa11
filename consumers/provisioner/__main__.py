from consumers.provisioner.app import main

main()
