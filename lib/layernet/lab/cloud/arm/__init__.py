"""The ARM stand-in (management.azure.com) that stages 02-04 drive with the real azure-mgmt-* clients.

- `service.Arm`: ARM's semantics without HTTP (subscriptions, providers, resource groups, a generic resource
  store for any ``.../providers/{ns}/{type}/{name}[/{type}/{name}...]`` with the long-running-operation
  contract, ARM's error shape, paging, case-insensitive ids); its docstring lists every route.
- `store.Store`: the state as one JSON file in the lab state folder (`<state>/cloud/arm-store.json`), so a
  restarted cloud keeps its resources.
- `hooks`: per-type behaviour (when an operation completes, properties the service sets, properties that
  change over time, actions, lab services to start). Register with ``hooks.register(type, hook)``.
- `app.build`: the starlette app: bearer tokens from the Entra stand-in are checked, then `Arm.handle`.
"""
