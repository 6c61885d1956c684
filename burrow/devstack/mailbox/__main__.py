from burrow.devstack.mailbox import main

main()
