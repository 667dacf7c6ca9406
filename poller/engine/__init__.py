"""What every source shares, written once: records, batching, invoking, verdicts, settling."""
