"""FilterCriteria: EventBridge-style patterns compiled once, matched per record (a pure leaf)."""
