// The page of tests/taro.rs: Taro's H5 `request` (what `Taro.request` / `wx.request` is in an H5
// build), bundled for the browser by `npm run build` into taro/bundle.js (git-ignored).
//
// window.call(url, headers) → Promise<{cb: "success"|"fail", statusCode, data, errMsg}>, from
// the success or fail callback Taro calls.
import { request } from "@tarojs/taro-h5";

window.call = (url, headers = {}) =>
  new Promise((resolve) => {
    const task = request({
      url,
      header: headers,
      success: (res) =>
        resolve({
          cb: "success",
          statusCode: res.statusCode,
          data: res.data,
          errMsg: res.errMsg ?? null,
        }),
      fail: (err) =>
        resolve({
          cb: "fail",
          statusCode: err?.statusCode ?? null,
          data: null,
          // Taro fills errMsg from the fetch error after the callback; read it the same way.
          errMsg: String(err?.errMsg || err?.message || err),
        }),
    });
    // Taro's promise rejects too when the call fails: the callbacks report it.
    if (task && typeof task.catch === "function") task.catch(() => {});
  });
window.taroReady = true;
