"""The staff web console at /admin: password login, sqladmin CRUD and server-rendered custom pages."""
