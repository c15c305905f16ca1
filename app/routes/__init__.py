"""The HTTP routes, one router per resource. Routers never import each other."""
