"""``coordd mcp``: coordd for LLM agents, over the Model Context Protocol (``[mcp]`` extra).

``CoorddMCP(client)`` builds an ``mcp.server.mcpserver.MCPServer`` whose tools act as the one
agent *client* is; ``coordd mcp`` runs it over stdio or streamable HTTP. See
``docs/integrations.md``.
"""
