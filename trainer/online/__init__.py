"""The online learner: DDPG trained from transitions recorded elsewhere (the service's sessions), publishing its actor."""
