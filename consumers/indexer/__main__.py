from consumers.indexer.app import main

main()
