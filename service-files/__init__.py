"""The login-service templates, shipped inside the package as ``jobtunnel.service_files``.

This folder is the one copy of the templates: pyproject.toml maps it to this package name
and lists the templates as package data, so ``jobtunnel service install`` finds them with
importlib.resources in an editable install (here) and in a regular one (site-packages).
"""
