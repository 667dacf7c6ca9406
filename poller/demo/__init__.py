"""`poller demo`: the daemon against an embedded emulator, its handlers and a Lambda package."""
