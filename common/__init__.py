"""What every package of EdgeSweep may import, the board's included: it imports nothing but the
standard library. The user-facing error base, the registry every extension point uses, and the
declaration of a trial knob."""
