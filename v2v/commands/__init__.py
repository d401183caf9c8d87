"""One module per `v2v` command, plus the options they share (`v2v.commands.common`)."""
