from infra.lag_exporter.app import main

main()
