/** Lua scripts, imported as text (`with { type: "text" }`): bun build --compile embeds them in the binary. */
declare module "*.lua" {
  const text: string;
  export default text;
}
