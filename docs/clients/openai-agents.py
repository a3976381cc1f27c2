from agents import Agent
from agents.mcp import MCPServerStreamableHttp

paywarden = MCPServerStreamableHttp(
    params={
        "url": "http://127.0.0.1:8080/agentic/v1/mcp",
        "headers": {
            "X-Entity-Id": "8ac7a4c9000000000000000000000001",
            "X-Token": "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator",
        },
    }
)
agent = Agent(name="PaymentAgent", mcp_servers=[paywarden])
