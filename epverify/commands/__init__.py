"""Subcommands that live in their own modules: each defines `register_cli(subparsers)`, adding its parser and
setting `func` to a function of the parsed args that returns the exit status (listed in cli.COMMAND_MODULES)."""
