"""Training jobs as the API shows them: live events, reward histories and their CSV and plot."""
