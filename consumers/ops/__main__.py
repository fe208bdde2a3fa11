from consumers.ops.app import main

main()
