"""The online learner: DDPG trained from transitions recorded elsewhere (the sessions), publishing its actor."""
