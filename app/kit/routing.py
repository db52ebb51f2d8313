"""``include_flat``: a router's routes added to the app's own router, as ``include_router`` did before FastAPI
0.137.

Since 0.137 an included router stays one node of the app's routes, and every request is matched through it:
the node is tested, then the route inside it, and each time FastAPI checks whether any router of the tree has
changed by walking their routes. For the API's routes that was about a quarter of the CPU of a request refused
at once (a payment notification without a signature: 640–720 µs → 480–520 µs in-process;
docs/performance-rounds.md). The API is assembled once at start-up and never changed afterwards, so nothing
needs the nodes.

Each route is added again with every setting FastAPI stores on it, so what is served and documented is the
same: path under the prefix, methods, status code, models, dependencies (the router's own are already part of
each route), tags, responses and OpenAPI fields. ``app.dependency_overrides`` applies to them as to any route
of the app. Only API routes are flattened: a router holding anything else (a mount, a WebSocket, a nested
router) is refused at start-up rather than served differently.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter


def include_flat(app: FastAPI, router: APIRouter, *, prefix: str = "") -> None:
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"include_flat: {route!r} is not an API route; include its router normally")
        app.router.add_api_route(
            prefix + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=list(route.tags),
            dependencies=list(route.dependencies),
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=dict(route.responses),
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
            form_limits=route.form_limits,
        )
