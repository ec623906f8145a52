declare module "*.so" {
  const path: string;
  export default path;
}
declare module "*/mcfs-watchdog" {
  const path: string;
  export default path;
}
