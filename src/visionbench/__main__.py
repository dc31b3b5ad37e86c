from visionbench.cli import main

main()
