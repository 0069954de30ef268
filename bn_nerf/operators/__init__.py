"""Forward operators of the inverse tasks: how a signal on a grid becomes measurements."""
