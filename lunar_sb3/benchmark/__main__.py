from lunar_sb3.benchmark.cli import main

main()
