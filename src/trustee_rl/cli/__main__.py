from trustee_rl.cli import main

main()
