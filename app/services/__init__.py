"""The API's use cases, between the routes (which parse and present) and the store: submit a job or a sweep, find
or create a model, promote or roll back and then refresh, build a policy's files. Services never import routes."""
