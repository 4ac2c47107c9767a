"""What every process shares: settings, logging, the payload codec, the Temporal connection, the consent store."""
