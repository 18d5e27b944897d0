"""Staff accounts for the console: who may sign in (accounts), with which rights (roles), on
which browser (sessions). The console's pages (web/staff) and the `users` CLI call these."""
