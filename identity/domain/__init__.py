"""Pure domain rules of identity: deciders and validators. No I/O, no clock, no randomness."""
